"""Code that runs inside a child interpreter against the target's ultralytics."""
