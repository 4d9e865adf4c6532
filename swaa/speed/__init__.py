"""Speed: prefill/decode measurement, the cost model that predicts it, and the accuracy-vs-time trade-off (advise)."""
