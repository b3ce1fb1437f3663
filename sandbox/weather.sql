-- The seed-004 weather warehouse ("dw"): raw -> core -> mart, as the users' Postgres runbook describes.
--
-- Runnable as is (psql -f) or through sandbox.weather.load_weather(). The number of days of hourly data
-- comes from the custom setting sandbox.days (default 14); data ends at the current hour, so freshness
-- checks are meaningful. Values are a deterministic function of (location, timestamp): no random().
-- Everything is generated set-wise with generate_series; nothing is inserted row by row.

create schema if not exists raw;
create schema if not exists core;
create schema if not exists mart;

-- ----------------------------------------------------------------------------------- reference data

create table if not exists core.location (
    location_id   serial primary key,
    location_name text not null,
    latitude      numeric(8, 5) not null,
    longitude     numeric(8, 5) not null,
    country       text,
    region        text,
    city          text,
    unique (location_name, latitude, longitude)
);

insert into core.location (location_name, latitude, longitude, country, region, city)
values
    ('Berlin', 52.52000, 13.40500, 'DE', 'Berlin', 'Berlin'),
    ('London', 51.50740, -0.12780, 'GB', 'England', 'London'),
    ('New York', 40.71280, -74.00600, 'US', 'New York', 'New York'),
    ('Tokyo', 35.67620, 139.65030, 'JP', 'Tokyo', 'Tokyo'),
    ('Sydney', -33.86880, 151.20930, 'AU', 'New South Wales', 'Sydney')
on conflict (location_name, latitude, longitude) do nothing;

create table if not exists core.wikipedia_page (
    wikipedia_page_id integer not null,
    page_title        text not null,
    namespace         integer not null default 0,
    page_language     text not null default 'en',
    is_current        boolean not null default true,
    unique (wikipedia_page_id, page_language)
);

insert into core.wikipedia_page (wikipedia_page_id, page_title, namespace, page_language)
values
    (-1, 'Data warehouse', 0, 'en'),
    (-2, 'PostgreSQL', 0, 'en'),
    (-3, 'Berlin', 0, 'en'),
    (-4, 'Tokyo', 0, 'en')
on conflict (wikipedia_page_id, page_language) do nothing;

-- ------------------------------------------------------------------------------------------- raw layer

create table if not exists raw.weather_observations (
    id            bigserial primary key,
    location_name text not null,
    ingested_at   timestamptz not null default now(),
    payload       jsonb not null
);
create index if not exists weather_observations_ingested_at_idx on raw.weather_observations (ingested_at);

-- ------------------------------------------------------------------------------------------ core facts

-- Partitioned by month ("different months = different partitions = different locks"); the default
-- partition catches rows outside the prepared months instead of failing the load.
create table if not exists core.weather (
    location_id         integer not null references core.location (location_id),
    observed_at         timestamptz not null,
    temperature_celsius numeric(5, 2),
    humidity_percent    numeric(5, 2),
    precipitation_mm    numeric(6, 2),
    wind_speed_kmh      numeric(6, 2),
    primary key (location_id, observed_at)
) partition by range (observed_at);
create index if not exists weather_observed_at_idx on core.weather (observed_at);

-- One partition per UTC month between the two timestamps; returns how many it created.
create or replace function core.ensure_weather_partitions(p_from timestamptz, p_to timestamptz)
returns integer
language plpgsql
as $$
declare
    month_start date;
    partition_name text;
    created integer := 0;
begin
    for month_start in
        select generate_series(
            date_trunc('month', p_from at time zone 'UTC'),
            date_trunc('month', p_to at time zone 'UTC'),
            interval '1 month'
        )::date
    loop
        partition_name := 'weather_' || to_char(month_start, 'YYYY_MM');
        if to_regclass(format('core.%I', partition_name)) is null then
            execute format(
                'create table core.%I partition of core.weather for values from (%L) to (%L)',
                partition_name,
                month_start::timestamp at time zone 'UTC',
                (month_start + interval '1 month')::timestamp at time zone 'UTC'
            );
            created := created + 1;
        end if;
    end loop;
    return created;
end;
$$;

-- The window of hourly data: the last sandbox.days days, ending at the current hour.
drop table if exists pg_temp.sandbox_window;
create temporary table sandbox_window as
select
    date_trunc('hour', now()) - make_interval(hours => 24 * days - 1) as first_hour,
    date_trunc('hour', now()) as last_hour
from (select coalesce(nullif(current_setting('sandbox.days', true), ''), '14')::integer as days) d;

-- Months through next month, so rows inserted "now" by tests and demos land in a real partition.
select core.ensure_weather_partitions(first_hour, last_hour + interval '1 month') from sandbox_window;
create table if not exists core.weather_default partition of core.weather default;

insert into core.weather (
    location_id, observed_at, temperature_celsius, humidity_percent, precipitation_mm, wind_speed_kmh
)
select
    l.location_id,
    h.observed_at,
    round((c.base_temp
        + 6 * sin(2 * pi() * (extract(hour from h.observed_at at time zone 'UTC') + c.utc_offset - 9) / 24)
        + 3 * sin(extract(epoch from h.observed_at) / 86400.0 / 2 + l.location_id))::numeric, 2),
    round((65 + 20 * cos(extract(epoch from h.observed_at) / 43200.0 + l.location_id))::numeric, 2),
    round(greatest(0, 3 * sin(extract(epoch from h.observed_at) / 30000.0 + 2 * l.location_id) - 1.8)::numeric, 2),
    round((12 + 8 * abs(sin(extract(epoch from h.observed_at) / 20000.0 + l.location_id)))::numeric, 2)
from core.location l
join (
    values ('Berlin', 9.0, 1), ('London', 11.0, 0), ('New York', 12.0, -5), ('Tokyo', 16.0, 9),
           ('Sydney', 19.0, 10)
) as c (location_name, base_temp, utc_offset) on c.location_name = l.location_name
cross join sandbox_window w
cross join generate_series(w.first_hour, w.last_hour, interval '1 hour') as h (observed_at)
on conflict (location_id, observed_at) do nothing;

-- The raw API responses the facts came from: one Open-Meteo-shaped payload per location and UTC day.
insert into raw.weather_observations (location_name, ingested_at, payload)
select
    l.location_name,
    max(w.observed_at) + interval '5 minutes',
    jsonb_build_object(
        'latitude', l.latitude,
        'longitude', l.longitude,
        'timezone', 'UTC',
        'hourly', jsonb_build_object(
            'time', jsonb_agg(to_char(w.observed_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI') order by w.observed_at),
            'temperature_2m', jsonb_agg(w.temperature_celsius order by w.observed_at),
            'relative_humidity_2m', jsonb_agg(w.humidity_percent order by w.observed_at),
            'precipitation', jsonb_agg(w.precipitation_mm order by w.observed_at),
            'wind_speed_10m', jsonb_agg(w.wind_speed_kmh order by w.observed_at)
        )
    )
from core.weather w
join core.location l using (location_id)
where not exists (select 1 from raw.weather_observations)
group by l.location_name, l.latitude, l.longitude, (w.observed_at at time zone 'UTC')::date;

create table if not exists core.wikipedia_revision (
    revision_id       bigint primary key,
    wikipedia_page_id integer not null,
    page_language     text not null,
    revised_at        timestamptz not null,
    editor            text not null,
    size_bytes        integer not null,
    foreign key (wikipedia_page_id, page_language)
        references core.wikipedia_page (wikipedia_page_id, page_language)
);
create index if not exists wikipedia_revision_revised_at_idx on core.wikipedia_revision (revised_at);

-- A revision in roughly one hour in five per page, by a small rotating set of editors.
insert into core.wikipedia_revision (
    revision_id, wikipedia_page_id, page_language, revised_at, editor, size_bytes
)
select
    (extract(epoch from h.revised_at)::bigint / 3600) * 10 - p.wikipedia_page_id,
    p.wikipedia_page_id,
    p.page_language,
    h.revised_at + make_interval(mins => (abs(p.wikipedia_page_id) * 7) % 60),
    'editor_' || ((extract(epoch from h.revised_at)::bigint / 3600 + abs(p.wikipedia_page_id)) % 7),
    40000 + abs(p.wikipedia_page_id) * 5000 + ((extract(epoch from h.revised_at)::bigint / 3600) % 97) * 13
from core.wikipedia_page p
cross join sandbox_window w
cross join generate_series(w.first_hour, w.last_hour, interval '1 hour') as h (revised_at)
where ((extract(epoch from h.revised_at)::bigint / 3600) + abs(p.wikipedia_page_id)) % 5 = 0
on conflict (revision_id) do nothing;

-- ------------------------------------------------------------------------------------------------ marts

create materialized view if not exists mart.daily_weather_aggregates as
select
    l.location_name,
    (w.observed_at at time zone 'UTC')::date as observation_date,
    min(w.temperature_celsius) as min_temperature_celsius,
    max(w.temperature_celsius) as max_temperature_celsius,
    round(avg(w.temperature_celsius), 2) as avg_temperature_celsius,
    sum(w.precipitation_mm) as total_precipitation_mm,
    count(*) as observation_count
from core.weather w
join core.location l on l.location_id = w.location_id
group by l.location_name, (w.observed_at at time zone 'UTC')::date;

-- The unique index on plain columns is what makes REFRESH ... CONCURRENTLY possible.
create unique index if not exists daily_weather_aggregates_location_date_uidx
    on mart.daily_weather_aggregates (location_name, observation_date);

create materialized view if not exists mart.daily_wikipedia_page_stats as
select
    p.page_title,
    p.page_language,
    (r.revised_at at time zone 'UTC')::date as revision_date,
    count(*) as revision_count,
    count(distinct r.editor) as editor_count,
    max(r.size_bytes) as max_size_bytes
from core.wikipedia_revision r
join core.wikipedia_page p using (wikipedia_page_id, page_language)
group by p.page_title, p.page_language, (r.revised_at at time zone 'UTC')::date;

create unique index if not exists daily_wikipedia_page_stats_page_date_uidx
    on mart.daily_wikipedia_page_stats (page_title, page_language, revision_date);

drop table sandbox_window;

analyze core.location;
analyze core.weather;
analyze core.wikipedia_revision;
analyze raw.weather_observations;
