"""`fleet report`: one run's evidence from the journal, as Markdown or one self-contained HTML
file (model.py gathers, markdown.py / htmlpage.py render, timeline.py draws the SVG)."""
