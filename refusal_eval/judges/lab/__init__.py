"""The judges' lab: labelled data, how judges are measured against it, and how heads are fitted.
Nothing here runs during an evaluation (the runtime judges live one level up)."""
