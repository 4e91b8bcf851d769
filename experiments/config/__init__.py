"""The experiment config: what the YAML may say, and how it is read.

`schema`: every section (pydantic), each rule of one section checked there; `learning`: the
schedule, plateau, EMA and fine-tuning sections; `base`: what every section shares;
`search_schema`: the `search:` section; `reference`: the config resolved (`harness config`),
its JSON Schema and its Markdown reference (`harness schema`); `loader`: a YAML file plus
dotted overrides, each failure one line naming the key; `yaml12`: numbers read by YAML 1.2's
rules; `urls`: storage and tracking URLs checked and their passwords redacted.

May import: pydantic, PyYAML, `experiments.errors`. Nothing heavy: the CLI stays fast.
"""
