"""The security console: server-rendered pages at /console for operators, same origin as the API.

    app        install_console: the routes, the static files and the security headers
    auth       sign-in cookie, CSRF check and role check of each console request
    security   Content-Security-Policy and the other headers every console answer carries
    render     the Jinja2 environment, filters and error pages
    actions    console acts, each performed through the admin API route it names (same rules, same audit)
    charts     inline SVG charts
    rego       syntax highlighting of Rego sources
    pages/     one module per page: overview, calls, approvals, agents, revocations, policy, audit"""
