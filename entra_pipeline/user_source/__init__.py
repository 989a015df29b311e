"""The MDM user source (seed 001, docs/user-source.md): every user and group of the tenant published
as `mdm.*`, with custom attributes, rendered templates and invitations; `user_source_definitions`
is its face.
"""
