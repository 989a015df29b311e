"""One sync run against Graph, shared by both sources: the Graph session recorded in the warehouse
(and, as it grows, one unit per collection on one run skeleton).
"""
