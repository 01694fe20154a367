/** The plugin's command ids: the panel's buttons run them, as the command palette does. */
export namespace CommandIDs {
  export const open = 'nbscale:open';
  export const refresh = 'nbscale:refresh';
  export const updateAutoscaler = 'nbscale:update-autoscaler';
  export const stopPool = 'nbscale:stop-pool';
  export const cancelCall = 'nbscale:cancel-call';
}
