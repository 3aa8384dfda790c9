// Stand-in for ComfyUI's /scripts/api.js: routes live under /api, as ComfyUI serves them, and server
// events reach listeners as CustomEvents whose detail is the event's data (tests dispatch them).
class StandInApi extends EventTarget {
  apiURL(route) {
    return `/api${route}`;
  }

  fetchApi(route, options) {
    return fetch(`/api${route}`, options);
  }
}

export const api = new StandInApi();
