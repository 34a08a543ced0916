"""The side-by-side arena: people compare two registered model versions blind and their votes become
preference data. `store` (the vote database), `stats` (human win rates), `generation` (streamed answers),
`export` (votes -> preference rows) need neither MLflow nor Prefect; `catalog` (the registry) and `app` (the
web page) do."""
