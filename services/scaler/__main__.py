from services.scaler.command import command

command()
