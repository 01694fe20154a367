import { followLogs, KEEP_LOG_LINES, logsQuery } from '../logs';
import { logLine, logs } from './fixtures';

describe('followLogs', () => {
  it('starts from the last lines, then appends what came since', () => {
    const first = followLogs(
      null,
      logs({ lines: [logLine('one', 0), logLine('two', 1)], cursor: 8 })
    );
    expect(first.lines.map(l => l.text)).toEqual(['one', 'two']);
    expect(logsQuery(null, 200)).toBe('tail=200');
    expect(logsQuery(first, 200)).toBe('tail=200&after=8');
    const next = followLogs(
      first,
      logs({ lines: [logLine('three', 2)], cursor: 14 })
    );
    expect(next.lines.map(l => l.text)).toEqual(['one', 'two', 'three']);
    expect(next.cursor).toBe(14);
    expect(followLogs(next, logs({ cursor: 14 })).lines).toHaveLength(3);
  });

  it('marks where lines were left out when it fell behind', () => {
    const first = followLogs(null, logs({ lines: [logLine('a')], cursor: 1 }));
    const next = followLogs(
      first,
      logs({ lines: [logLine('z')], cursor: 99, skipped: true })
    );
    expect(next.lines.map(l => [l.text, l.gap ?? false])).toEqual([
      ['a', false],
      ['', true],
      ['z', false]
    ]);
  });

  it('keeps the latest lines only', () => {
    let view = followLogs(null, logs({ cursor: 0 }));
    for (let i = 0; i < KEEP_LOG_LINES + 20; i++) {
      view = followLogs(view, logs({ lines: [logLine(`${i}`, i)], cursor: i }));
    }
    expect(view.lines).toHaveLength(KEEP_LOG_LINES);
    expect(view.lines[view.lines.length - 1].text).toBe(
      `${KEEP_LOG_LINES + 19}`
    );
  });

  it('reads the tail again where the launcher cannot follow', () => {
    const first = followLogs(
      null,
      logs({ lines: [logLine('a')], cursor: null })
    );
    expect(logsQuery(first, 50)).toBe('tail=50');
    const again = followLogs(
      first,
      logs({ lines: [logLine('a'), logLine('b')], cursor: null })
    );
    expect(again.lines.map(l => l.text)).toEqual(['a', 'b']);
  });
});
