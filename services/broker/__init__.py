"""An embedded MQTT broker (amqtt) so that ``shoal up`` works with nothing installed.

For production, use mosquitto or a clustered broker (EMQX, VerneMQ); see the README.
"""
