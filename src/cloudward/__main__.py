"""`python -m cloudward`: the same as the `cloudward` command (the server runs jobs this way, with
its own interpreter, whatever PATH holds)."""

from cloudward.cli import main

main()
