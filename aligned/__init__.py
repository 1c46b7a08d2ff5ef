"""aligned: AligNet end to end in JAX (teacher, triplet generation, students, evaluation)."""

__version__ = "0.1.0"
