"""Analysis of attention under SWAA: attention maps and sink mass, LightTransfer lazy ratios, perplexity and the
window x sinks loss grid."""
