"""Entry point for `streamlit run streamlit_app.py` (what `make app` runs); the app is ferbench/app.py."""

from ferbench.app import main

main()
