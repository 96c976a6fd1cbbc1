"""Front ends for people: the `mediafarm` command, the demo, local clamd and notebook helpers (may import everything else)."""
