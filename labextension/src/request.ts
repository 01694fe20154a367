import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

/** Where the server extension serves its API, relative to the server's base URL. */
export const API_PATH = 'nbscale/api';

/**
 * Call the nbscale server extension's REST API.
 *
 * @param endPoint the route under `nbscale/api/`, e.g. `pools` or `calls/fc-1`
 * @param init the fetch options (method, body)
 * @param serverSettings the Jupyter server to ask (default: this page's)
 * @returns the reply's JSON body
 * @throws ServerConnection.NetworkError when the server cannot be reached, and
 *   ServerConnection.ResponseError (with the server's `message`) for a non-2xx reply
 */
export async function requestAPI<T>(
  endPoint: string,
  init: RequestInit = {},
  serverSettings: ServerConnection.ISettings = ServerConnection.makeSettings()
): Promise<T> {
  const url = URLExt.join(serverSettings.baseUrl, API_PATH, endPoint);
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url, init, serverSettings);
  } catch (error) {
    throw new ServerConnection.NetworkError(error as TypeError);
  }
  const text = await response.text();
  let data: unknown = text;
  if (text.length > 0) {
    try {
      data = JSON.parse(text);
    } catch {
      // Not JSON (a proxy's error page, say): keep the text for the message.
    }
  }
  if (!response.ok) {
    const message =
      typeof data === 'object' && data !== null && 'message' in data
        ? String((data as { message: unknown }).message)
        : `${response.status} ${response.statusText}`;
    throw new ServerConnection.ResponseError(response, message);
  }
  return data as T;
}

/** The URL of the `events` WebSocket, with the token where the page uses one. */
export function eventsUrl(serverSettings: ServerConnection.ISettings): string {
  let url = URLExt.join(serverSettings.wsUrl, API_PATH, 'events');
  if (serverSettings.appendToken && serverSettings.token !== '') {
    url += `?token=${encodeURIComponent(serverSettings.token)}`;
  }
  return url;
}
