"""From an image to a verdict: the Explainer object the CLI and the app use, the post-processing of the
explanations (threshold, one value per group, the ranking, questioned or not) and the heatmaps of where they look."""
