// Stand-in for ComfyUI's /scripts/api.js: routes live under /api, as ComfyUI serves them.
export const api = {
  apiURL: (route) => `/api${route}`,
  fetchApi: (route, options) => fetch(`/api${route}`, options),
};
