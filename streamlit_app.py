"""Entry point for `streamlit run streamlit_app.py` (what `make app` runs); the app is ferbench/serving/app.py."""

from ferbench.serving.app import main

main()
