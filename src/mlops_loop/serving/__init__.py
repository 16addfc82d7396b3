"""The online endpoint and its prediction log, which lands served rows as batch files."""
