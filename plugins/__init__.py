"""lm-eval model classes (installed as refusal_eval.plugins)."""
