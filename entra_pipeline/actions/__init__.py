"""Actions on the directory (docs/actions.md): selections over the published warehouse write
plans; a person applies a plan, with the action app's own credential, and every request is
audited in `ops.actions`."""
