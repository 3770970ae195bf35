"""The ops dashboard: Streamlit pages over the analytics report registry (SPEC §7).

``app.py`` is the Streamlit entry, ``views/`` holds one layout module per page, ``figures.py``
the pure Plotly builders and ``data.py`` the cached queries. Run it with ``portcullis dashboard``.
"""
