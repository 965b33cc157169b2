from services.agent.command import command

command()
