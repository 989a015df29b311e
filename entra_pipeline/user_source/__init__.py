"""The MDM user source (seed 001, SPEC 4): every user and group of the tenant published as `mdm.*`,
with custom attributes, rendered templates and invitations; `user_source_definitions` is its face.
"""
