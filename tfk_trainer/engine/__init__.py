"""The engine: one replica's step, the compiled multi-step execution, the epoch driver."""
