from diplotone.cli import app

app()
