from services.broker.command import command

command()
