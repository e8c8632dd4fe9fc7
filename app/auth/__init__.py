"""Who may see what: sign-in, proxy headers and signed embed links, each turned into a Scope."""
