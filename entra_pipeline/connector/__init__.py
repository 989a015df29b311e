"""The Ivanti connector (seed 000): its raw layer, models, attribute mapping, checks, job and
schedule.
"""
