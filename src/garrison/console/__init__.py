"""The web console at /console: sign-in, chat, and administration, server-rendered (see console.app)."""
