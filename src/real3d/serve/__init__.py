"""`real3d serve`: the web page (Gradio) and the REST API (`/v1`) over one on-disk job store.

Layout: `options` maps client options to `AnimateOptions`, `media` checks uploaded files by their content,
`jobs` is the job store and its worker slots, `worker` runs one job in its own process, `api` is the REST API,
`page` the Gradio page, `server` assembles them behind the token gate and holds the `serve` command."""
