from services.balancer.command import command

command()
