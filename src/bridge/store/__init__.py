"""Store: the env's record (the single source of truth), the envmod root that holds envs, modules and logs, and what an env may be called."""
