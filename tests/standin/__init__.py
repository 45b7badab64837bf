"""Local stand-ins for the services the bridge talks to, so tests never reach the internet."""
