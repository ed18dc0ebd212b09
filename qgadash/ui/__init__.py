"""The Textual dashboard. The CLI imports `qgadash.ui.app` (QgadashApp, run_dashboard)
only when the dashboard starts, so headless commands never load Textual.

Layout: `app.py` (the App: store → screens, actions as workers, quitting safely),
`screens/` (fleet, detail, files, dialogs, help), `widgets/fleet_table.py` (the
fleet table on Textual's Line API: only the lines on screen, only the cells that
changed), and Textual-free view logic: `fleet_view.py` (columns, filter, sort, cells,
header), `vm_view.py` (detail tabs), `file_view.py`, `formatting.py`, `plain.py`
(untrusted guest text), `themes.py` (TOML themes in `themes/`).
"""
