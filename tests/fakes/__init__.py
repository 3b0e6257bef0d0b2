"""In-process fakes of outside services, reached over real sockets (no mocks of our own code)."""
