import { useState } from 'react';
import { api } from '../api/client';
import type { RiskHeatmap } from '../api/types';
import { ErrorBox, Link, Loading, PageHeader, TableWrap } from '../components';
import { useLiveEvent, useLoad, useResync } from '../hooks';
import { buildGrid, describeCell, LEVELS, type Cell } from '../lib/heatmap';
import { shortId } from '../lib/format';
import { pathOf } from '../lib/router';

const RANGES = [
  { hours: 24, label: 'Last 24 hours' },
  { hours: 72, label: 'Last 3 days' },
  { hours: 168, label: 'Last 7 days' },
];

function drillDown(runtimeId: string, cell: Cell): string {
  const from = cell.hour;
  const to = new Date(Date.parse(cell.hour) + 3_600_000).toISOString();
  const params = new URLSearchParams({ runtime_id: runtimeId, from, to });
  if (cell.top && cell.top !== 'unclassified') params.set('risk', cell.top);
  return `/audit?${params.toString()}`;
}

export function Risk() {
  const [hours, setHours] = useState(24);
  const [stale, setStale] = useState(false);
  const map = useLoad(async () => {
    const to = new Date(Math.ceil(Date.now() / 3_600_000) * 3_600_000);
    const from = new Date(to.getTime() - hours * 3_600_000);
    const data = await api.get<RiskHeatmap>('/v1/risk/hourly', { from: from.toISOString(), to: to.toISOString() });
    setStale(false);
    return { data, grid: buildGrid(data.hours, from, to) };
  }, [hours]);
  useLiveEvent((e) => {
    if (e.kind === 'decision') setStale(true);
  });
  useResync(() => map.reload());

  const grid = map.data?.grid;
  return (
    <section aria-labelledby="page-title">
      <PageHeader title="Risk">
        <label>
          Range{' '}
          <select value={hours} onChange={(e) => setHours(Number(e.target.value))}>
            {RANGES.map((r) => (
              <option key={r.hours} value={r.hours}>
                {r.label}
              </option>
            ))}
          </select>
        </label>
      </PageHeader>
      <p className="muted">
        Decisions per runtime and UTC hour, each cell coloured by the highest risk level it holds. Select a cell to see its decisions.
      </p>
      <ul className="legend" aria-label="Legend">
        {LEVELS.map((l) => (
          <li key={l}>
            <span className={`swatch heat-${l}`} aria-hidden="true" /> {l}
          </li>
        ))}
      </ul>
      <div className="update-bar">
        {stale ? (
          <button type="button" onClick={() => map.reload()}>
            New decisions arrived: refresh
          </button>
        ) : null}
      </div>
      <ErrorBox error={map.error} />
      {map.loading && !grid ? <Loading what="the heat map" /> : null}
      {grid && grid.rows.length === 0 ? <p className="muted">No decisions in this range.</p> : null}
      {grid && grid.rows.length > 0 ? (
        <TableWrap label="Risk heat map">
          <table className="heatmap" id="heatmap">
            <thead>
              <tr>
                <th scope="col">Runtime</th>
                {grid.hours.map((h, i) => (
                  <th scope="col" key={h} className="heat-hour">
                    {i % 6 === 0 ? h.slice(11, 13) + 'h' : <span className="sr-only">{h.slice(11, 13)}h</span>}
                  </th>
                ))}
              </tr>
            </thead>
            <tbody>
              {grid.rows.map((row) => (
                <tr key={row.runtimeId}>
                  <th scope="row">
                    <Link to={pathOf({ name: 'runtime', runtimeId: row.runtimeId })}>
                      <code>{shortId(row.runtimeId, 6)}</code>
                    </Link>
                  </th>
                  {row.cells.map((cell) =>
                    cell.total === 0 ? (
                      <td key={cell.hour} className="heat-cell heat-empty" title={describeCell(cell)} />
                    ) : (
                      <td key={cell.hour} className={`heat-cell heat-${cell.top ?? 'none'}`}>
                        <Link to={drillDown(row.runtimeId, cell)} title={describeCell(cell)}>
                          <span className="sr-only">{describeCell(cell)}</span>
                          <span aria-hidden="true">{cell.total > 99 ? '99+' : cell.total}</span>
                        </Link>
                      </td>
                    ),
                  )}
                </tr>
              ))}
            </tbody>
          </table>
        </TableWrap>
      ) : null}
    </section>
  );
}
