"""The three-stage search: refusal direction -> greedy minimal set -> interactions."""
