"""``python -m echoclip_cli`` runs the ``echoclip`` command."""

from .cli import main

if __name__ == "__main__":
    main()
