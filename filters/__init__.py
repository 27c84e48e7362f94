"""Pure-Python document filters (no Spark): normalisation, language ID, word segmentation,
rule filters, quality scoring and MinHash. Every function here works on plain Python / Arrow
data so it can be unit-tested without a cluster."""
