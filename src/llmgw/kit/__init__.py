"""The shared service kit: everything a service needs that is not its own business logic."""
