"""Build: make the env (backends), install its packages, compile the rule table's packages against the central stack, and cache those builds."""
