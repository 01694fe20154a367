/**
 * How the sidebar is connected, in words. Pure, tested with jest: the model passes the HTTP
 * status of a failed request (null when the server could not be reached at all).
 */

export type ConnectionStatus =
  /** Nothing heard yet. */
  | 'connecting'
  /** The `events` WebSocket pushes changes. */
  | 'live'
  /** The WebSocket is down; the REST API is polled. */
  | 'polling'
  /** The Jupyter server answers, but without the nbscale API. */
  | 'missing'
  /** The server extension is there, its control plane is not running. */
  | 'stopped'
  /** The Jupyter server cannot be reached. */
  | 'unreachable';

/** What a failed request says about the connection. */
export function statusOfFailure(httpStatus: number | null): ConnectionStatus {
  if (httpStatus === null) {
    return 'unreachable';
  }
  if (httpStatus === 404) {
    return 'missing';
  }
  if (httpStatus === 503) {
    return 'stopped';
  }
  return 'unreachable';
}

/** The one plain sentence the panel shows for a status; null when all is well. */
export function describeStatus(
  status: ConnectionStatus,
  detail = ''
): string | null {
  const why = detail ? ` (${detail})` : '';
  switch (status) {
    case 'connecting':
    case 'live':
    case 'polling':
      return null;
    case 'missing':
      return (
        'The nbscale server extension is not running in this Jupyter server' +
        `${why}. Install nbscale in the server's environment ` +
        '(pip install nbscale), then restart JupyterLab.'
      );
    case 'stopped':
      return `The nbscale control plane in this Jupyter server is not running${why}.`;
    case 'unreachable':
      return `The Jupyter server cannot be reached${why}. Retrying in the background.`;
  }
}

/** Whether the status is a failure, shown as one message in place of the pools. */
export function isFailure(status: ConnectionStatus): boolean {
  return describeStatus(status) !== null;
}
