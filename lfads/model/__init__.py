"""The LFADS graph as small tf.Modules whose variable names follow the original scopes."""
