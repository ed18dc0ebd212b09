"""The simulated qemu-ga's commands, by area.

`state` holds what one agent knows (`AgentState`) and the facts every area reads; each
other module is a mixin over it with a `HANDLERS` table (command name -> method):
`info`, `hardware`, `stats`, `admin`, `freeze`, `power`, `files`, `processes`. `schema` says
which commands each release has and checks arguments; `faults` bends replies.
`qgadash.sim.agent.GuestAgent` combines them and dispatches.
"""
