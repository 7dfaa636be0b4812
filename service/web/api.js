// The API from the page: JSON in and out, problem+json errors turned into readable messages, the key for this tab.

const KEY = "diplotone.apiKey"; // sessionStorage: gone when the tab closes; never in a URL

export function savedKey() {
  return sessionStorage.getItem(KEY) || "";
}

export function keepKey(key) {
  if (key) sessionStorage.setItem(KEY, key);
  else sessionStorage.removeItem(KEY);
}

export class ApiError extends Error {
  constructor(title, detail, status) {
    super(detail || title);
    this.title = title;
    this.detail = detail;
    this.status = status;
  }
}

// fetch `path` with an optional JSON body; the key goes in a header only, and only when one is kept.
export async function api(path, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json, application/problem+json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const key = savedKey();
  if (key) headers.Authorization = `Bearer ${key}`;
  let response;
  try {
    response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (error) {
    throw new ApiError("The service cannot be reached", `${method} ${path} failed: ${error.message}`, 0);
  }
  const type = response.headers.get("content-type") || "";
  const data = type.includes("json") ? await response.json().catch(() => null) : null;
  if (!response.ok) {
    const title = (data && data.title) || `${response.status} ${response.statusText}`;
    throw new ApiError(title, (data && data.detail) || "the service gave no detail", response.status);
  }
  return data;
}

// Show `error` in the alert region `box` (hidden again by clearError).
export function showError(box, error) {
  box.replaceChildren();
  const title = document.createElement("strong");
  title.textContent = error.title || "Something went wrong";
  const detail = document.createElement("span");
  detail.textContent = error.detail || error.message || String(error);
  box.append(title, detail);
  box.hidden = false;
}

export function clearError(box) {
  box.hidden = true;
  box.replaceChildren();
}
