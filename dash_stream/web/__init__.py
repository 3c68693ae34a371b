"""The built-in dashboard's assets (served by dash_stream.server.page): the page, its ES modules
(app.js, dash-client.js with its typings, swarm-state.js) and its style sheet. No build step."""
