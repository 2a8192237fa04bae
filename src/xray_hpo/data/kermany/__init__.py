"""data/kermany"""
