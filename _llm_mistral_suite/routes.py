"""What runs a model the API no longer serves: its successor, a model registered here, or the command that gets one."""

from __future__ import annotations

from .catalog import CatalogEntry
from .errors import MistralSuiteError

# Mamba-2 came to llama.cpp after llamafile's last release; Pixtral is for images, which `llm -m llamafile` never sends.
NO_LLAMAFILE_ROUTES = frozenset({"codestral-mamba", "pixtral-12b"})


def alternatives(entry: CatalogEntry) -> str:
    """What still runs a model the API no longer serves: its successor, and the local or server model registered
    here for its local route (as `llm mistral models` finds them), or else the command that gets one."""
    routes = []
    if entry.replacement:
        routes.append(f"use {entry.replacement} on the API (llm -m mistral/{entry.replacement}; "
                      f"llm -c -m mistral/{entry.replacement} continues a conversation with it)")
    if entry.local_route:
        from .local.download import route_runners  # only on this error path: reads our registries, no network

        runners = route_runners().get(entry.local_route)
        name = entry.description or entry.api_name
        if runners:
            routes.append(f"run {name} here with the model registered for it: "
                          + " or ".join(f"`llm -m {runner}`" for runner in runners))
        else:
            routes.append(
                f"run {name} yourself: `llm mistral local download {entry.local_route}`"
                + (" (llama.cpp)" if entry.local_route in NO_LLAMAFILE_ROUTES else
                   " (llama.cpp) or a llamafile (`llm -m llamafile`)")
            )
    if not routes:
        return "`llm mistral models` lists the models the API serves."
    return "Instead, " + "; or ".join(routes) + "."


def retired_message(entry: CatalogEntry) -> str:
    when = f" on {entry.deprecation_date}" if entry.deprecation_date else ""
    return f"{entry.api_name} was retired from Mistral's API{when}. {alternatives(entry)}"


def missing_model_error(entry: CatalogEntry, error: MistralSuiteError) -> MistralSuiteError:
    """``error``, or for a 404 on a model the catalog knows a successor or a local route for, one naming them."""
    if error.status != 404 or not (entry.replacement or entry.local_route):
        return error
    return MistralSuiteError(
        f"Mistral's API no longer serves {entry.api_name} (404{': ' + error.detail if error.detail else ''}). "
        f"{alternatives(entry)} `llm mistral refresh` updates the model list.",
        status=404, detail=error.detail,
    )
