"""lm-eval task definitions (installed as refusal_eval.tasks)."""
